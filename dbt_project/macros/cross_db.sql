{#- Cross-database helpers not covered by dbt's own (dbt.type_string, dbt.date_trunc, ...). -#}

{% macro utc_date(expr) %}
  {{ return(adapter.dispatch('utc_date', 'school_equity')(expr)) }}
{% endmacro %}

{#- The calendar date of a timestamp with time zone, in UTC. A plain cast would use the
    session time zone (DuckDB: the machine's; Snowflake: the account's), so one event
    could land on different days in different places. -#}
{% macro duckdb__utc_date(expr) %}cast(timezone('UTC', {{ expr }}) as date){% endmacro %}

{% macro snowflake__utc_date(expr) %}to_date(convert_timezone('UTC', {{ expr }})){% endmacro %}

{% macro default__utc_date(expr) %}cast({{ expr }} as date){% endmacro %}


{#- A 64-bit float on every warehouse (DuckDB's FLOAT, which dbt.type_float() gives, is 32-bit). -#}
{% macro type_double() %}
  {{ return(adapter.dispatch('type_double', 'school_equity')()) }}
{% endmacro %}

{% macro duckdb__type_double() %}double{% endmacro %}

{% macro default__type_double() %}{{ dbt.type_float() }}{% endmacro %}

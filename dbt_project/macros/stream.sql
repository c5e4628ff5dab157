{#- Helpers for the stream models: the batch window and additive Silver columns. -#}

{% macro batch_window(column='batch_seq') %}
  {#- The half-open window of batch sequence numbers the Dagster partition range passes
      as --vars: [min_batch_seq, max_batch_seq_exclusive). Half-open so adjacent ranges
      never overlap and a one-batch run is [seq, seq + 1). Validated here because a typo
      in --vars would otherwise become an empty window and a silently empty increment. -#}
  {%- set lo = var('min_batch_seq') | string -%}
  {%- set hi = var('max_batch_seq_exclusive') | string -%}
  {%- if not (modules.re.fullmatch('[0-9]+', lo) and modules.re.fullmatch('[0-9]+', hi)) -%}
    {{ exceptions.raise_compiler_error("min_batch_seq and max_batch_seq_exclusive must be non-negative integers, got " ~ lo ~ " and " ~ hi) }}
  {%- endif -%}
  {%- if (lo | int) >= (hi | int) -%}
    {{ exceptions.raise_compiler_error("empty batch window [" ~ lo ~ ", " ~ hi ~ ")") }}
  {%- endif -%}
  {{ column }} >= {{ lo }} and {{ column }} < {{ hi }}
{% endmacro %}


{% macro optional_column(relation, column, data_type) %}
  {#- Silver evolves additively: a column added by a newer event schema (language, v2)
      exists in the Delta table only once the first such event was merged. Select it when
      present, a typed null otherwise, so Gold keeps one stable shape. -#}
  {%- if execute -%}
    {%- set present = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
  {%- else -%}
    {%- set present = [] -%}
  {%- endif -%}
  {%- if column | lower in present -%}
    cast({{ column }} as {{ data_type }})
  {%- else -%}
    cast(null as {{ data_type }})
  {%- endif %} as {{ column }}
{% endmacro %}

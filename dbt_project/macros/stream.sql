{#- Helpers for the stream models: the batch window and additive Silver columns. -#}

{% macro batch_window(column='batch_seq') %}
  {#- The half-open window of batch sequence numbers of the Dagster partition range:
      [min_batch_seq, max_batch_seq_exclusive). Half-open so adjacent ranges never overlap
      and a one-batch run is [seq, seq + 1). Dagster passes it in the environment
      (SCHOOL_EQUITY_MIN_BATCH_SEQ, SCHOOL_EQUITY_MAX_BATCH_SEQ_EXCLUSIVE): new --vars on
      every batch would throw away dbt's partial parse (school_equity/gold/window.py).
      By hand, `dbt build --vars '{min_batch_seq: .., max_batch_seq_exclusive: ..}'`.
      This macro runs only when a model builds incrementally, never at parse time, so
      the values are not part of what dbt parsed. Validated here because a typo would
      otherwise become an empty window and a silently empty increment. -#}
  {%- set env_lo = env_var('SCHOOL_EQUITY_MIN_BATCH_SEQ', '') -%}
  {%- set env_hi = env_var('SCHOOL_EQUITY_MAX_BATCH_SEQ_EXCLUSIVE', '') -%}
  {%- if env_lo or env_hi -%}
    {%- set cli_vars = invocation_args_dict.get('vars') or {} -%}
    {%- if cli_vars is string -%}{%- set cli_vars = fromyaml(cli_vars) or {} -%}{%- endif -%}
    {%- if 'min_batch_seq' in cli_vars or 'max_batch_seq_exclusive' in cli_vars -%}
      {{ exceptions.raise_compiler_error("the batch window is given twice: in --vars and in SCHOOL_EQUITY_MIN_BATCH_SEQ / SCHOOL_EQUITY_MAX_BATCH_SEQ_EXCLUSIVE; pass one") }}
    {%- endif -%}
    {%- if not (env_lo and env_hi) -%}
      {{ exceptions.raise_compiler_error("SCHOOL_EQUITY_MIN_BATCH_SEQ and SCHOOL_EQUITY_MAX_BATCH_SEQ_EXCLUSIVE go together, got '" ~ env_lo ~ "' and '" ~ env_hi ~ "'") }}
    {%- endif -%}
    {%- set lo = env_lo | string -%}
    {%- set hi = env_hi | string -%}
  {%- else -%}
    {%- set lo = var('min_batch_seq') | string -%}
    {%- set hi = var('max_batch_seq_exclusive') | string -%}
  {%- endif -%}
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

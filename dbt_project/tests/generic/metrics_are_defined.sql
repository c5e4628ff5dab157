{#- The semantic layer must not rot: every measure column of a mart has a row in the
    metric definitions seed (matched on model and metric), and every row there for the
    mart names a column that exists. Columns not listed in `attributes` (keys,
    descriptive columns) count as measures. Columns are read from the warehouse relation
    at run time, so no information_schema dialect is involved. Fails with one row per
    missing or stale definition. -#}
{% test metrics_are_defined(model, definitions, attributes=[]) %}
  {%- set model_name = model.identifier | lower -%}
  {%- set skip = attributes | map('lower') | list -%}
  {%- set rows = [] -%}
  {%- if execute -%}
    {%- for col in adapter.get_columns_in_relation(model) if col.name | lower not in skip -%}
      {%- do rows.append("select '" ~ (col.name | lower) ~ "' as metric") -%}
    {%- endfor -%}
  {%- endif %}
  with mart_metrics as (
    {%- if rows %}
    {{ rows | join('\n    union all\n    ') }}
    {%- else %}
    select cast(null as {{ dbt.type_string() }}) as metric where 1 = 0
    {%- endif %}
  ),

  defined as (
    select lower(metric) as metric
    from {{ definitions }}
    where lower(model) = '{{ model_name }}'
  )

  select
    '{{ model_name }}' as model,
    coalesce(mart_metrics.metric, defined.metric) as metric,
    case
      when defined.metric is null then 'column without a definition'
      else 'definition without a column'
    end as problem
  from mart_metrics
  full outer join defined
    on defined.metric = mart_metrics.metric
  where mart_metrics.metric is null or defined.metric is null
{% endtest %}

{#- The semantic layer must not rot: every measure column of the equity marts has a row
    in dim_climate_metric_definition, and every row there names a column that exists.
    Columns are read from the warehouse's relations at run time (portable: no
    information_schema dialects). Fails with one row per missing or stale definition. -#}
{% set marts = [
    'school_climate_snapshot',
    'gold_school_equity',
    'gold_climate_vulnerability',
    'gold_district_summary',
    'gold_borough_summary',
] %}
{#- Keys and descriptive attributes: not metrics. -#}
{% set attributes = [
    'dbn', 'survey_year', 'school_name', 'district', 'borough_code', 'borough', 'is_charter', 'is_d75',
    'location_fiscal_year', 'tract_fips', 'latitude', 'longitude', 'svi_year', 'svi_match_status',
    'svi_bucket_order', 'county_fips', 'county_name', 'tract_name', 'district_type',
] %}

with mart_metrics as (
    {%- set rows = [] %}
    {%- for mart in marts %}
        {%- set relation = ref(mart) %}
        {%- if execute %}
            {%- for col in adapter.get_columns_in_relation(relation) if col.name | lower not in attributes %}
                {%- do rows.append("select '" ~ mart ~ "' as model, '" ~ (col.name | lower) ~ "' as metric") %}
            {%- endfor %}
        {%- endif %}
    {%- endfor %}
    {%- if rows %}
    {{ rows | join('\n    union all\n    ') }}
    {%- else %}
    select cast(null as {{ dbt.type_string() }}) as model, cast(null as {{ dbt.type_string() }}) as metric
    where 1 = 0
    {%- endif %}
),

defined as (
    select lower(model) as model, lower(metric) as metric
    from {{ ref('dim_climate_metric_definition') }}
    where model in (
        {%- for mart in marts %}'{{ mart }}'{{ ', ' if not loop.last }}{% endfor -%}
    )
)

select
    coalesce(mart_metrics.model, defined.model) as model,
    coalesce(mart_metrics.metric, defined.metric) as metric,
    case
        when defined.metric is null then 'column without a definition'
        else 'definition without a column'
    end as problem
from mart_metrics
full outer join defined
    on defined.model = mart_metrics.model
    and defined.metric = mart_metrics.metric
where mart_metrics.metric is null or defined.metric is null

{{ config(materialized='table') }}
-- One row per 2020 census tract in the SVI: where it is and its latest vulnerability.

with vintages as (
    select
        *,
        row_number() over (partition by tract_fips order by svi_year desc) as newest_first
    from {{ ref('int_tract_vulnerability') }}
),

span as (
    select
        tract_fips,
        min(svi_year) as first_svi_year,
        count(*) as svi_vintage_count
    from vintages
    group by tract_fips
)

select
    vintages.tract_fips,
    vintages.county_fips,
    vintages.county_name,
    vintages.borough,
    vintages.tract_name,
    vintages.total_population,
    vintages.svi_year as latest_svi_year,
    span.first_svi_year,
    span.svi_vintage_count,
    vintages.svi_score as latest_svi_score,
    vintages.svi_bucket as latest_svi_bucket,
    vintages.is_high_vulnerability as latest_is_high_vulnerability
from vintages
inner join span on span.tract_fips = vintages.tract_fips
where vintages.newest_first = 1

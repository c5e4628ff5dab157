{{ config(meta={'dagster': {'ref': {'name': 'gold_school_equity'}}}) }}
-- (The meta names the asset this check belongs to in Dagster: the test reads two models.)
-- Every school's bucket is its tract's bucket for the same SVI vintage (the bucket is
-- computed once, in int_tract_vulnerability, and nowhere re-derived differently).

select
    equity.dbn,
    equity.survey_year,
    equity.svi_bucket,
    tracts.svi_bucket as tract_svi_bucket
from {{ ref('gold_school_equity') }} as equity
inner join {{ ref('gold_climate_vulnerability') }} as tracts
    on tracts.tract_fips = equity.tract_fips
    and tracts.svi_year = equity.svi_year
where coalesce(equity.svi_bucket, '-') <> coalesce(tracts.svi_bucket, '-')

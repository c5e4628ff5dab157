{{ config(meta={'dagster': {'ref': {'name': 'gold_school_equity'}}}) }}
-- (The meta names the asset this check belongs to in Dagster: the test reads two models.)
-- No surveyed school may disappear on the way to the equity mart (unmatched schools are
-- kept with svi_match_status); fails with the school-years that went missing or appeared.

select
    coalesce(surveys.dbn, equity.dbn) as dbn,
    coalesce(surveys.survey_year, equity.survey_year) as survey_year,
    case when equity.dbn is null then 'dropped' else 'unexpected' end as problem
from {{ ref('school_climate_snapshot') }} as surveys
full outer join {{ ref('gold_school_equity') }} as equity
    on equity.dbn = surveys.dbn
    and equity.survey_year = surveys.survey_year
where surveys.dbn is null or equity.dbn is null

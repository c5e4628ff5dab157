{{ config(materialized='table') }}
-- One row per school and published survey year (key: dbn, survey_year) with the SVI of
-- the census tract the school sits in, and the equity flags. Every surveyed school is
-- kept; svi_match_status says why a school has no SVI:
--   no_location        the DBN is not in any location extract
--   no_tract           the location has no 2010 tract GEOID
--   tract_not_in_svi   the 2010 tract GEOID has no row in the SVI vintage (tract
--                      geography changed in 2020; SVI 2022 uses 2020 tracts)
--   svi_score_missing  the tract is in the SVI but CDC publishes no score (-999)
--   matched            the school has a tract SVI score and bucket
-- The location vintage is the fiscal year closest to the survey year (ties: the earlier);
-- the SVI vintage is the one closest to the survey year (ties: the earlier).

with surveys as (
    select * from {{ ref('school_climate_snapshot') }}
),

locations as (
    select
        surveys.dbn,
        surveys.survey_year,
        locations.fiscal_year as location_fiscal_year,
        locations.tract_geoid,
        locations.latitude,
        locations.longitude,
        row_number() over (
            partition by surveys.dbn, surveys.survey_year
            order by abs(surveys.survey_year - locations.fiscal_year), locations.fiscal_year
        ) as closest_first
    from surveys
    inner join {{ ref('stg_school_location') }} as locations
        on locations.dbn = surveys.dbn
),

svi_vintages as (
    select distinct svi_year from {{ ref('int_tract_vulnerability') }}
),

svi_vintage_for_survey as (
    select
        survey_years.survey_year,
        svi_vintages.svi_year,
        row_number() over (
            partition by survey_years.survey_year
            order by abs(survey_years.survey_year - svi_vintages.svi_year), svi_vintages.svi_year
        ) as closest_first
    from (select distinct survey_year from surveys) as survey_years
    cross join svi_vintages
),

thresholds as (
    select
        max(case when threshold_key = 'low_parent_response_rate' then threshold_value end)
            as low_parent_response_rate,
        max(case when threshold_key = 'weak_climate_score' then threshold_value end)
            as weak_climate_score
    from {{ ref('dim_equity_threshold') }}
),

joined as (
    select
        surveys.*,
        locations.location_fiscal_year,
        locations.tract_geoid as tract_fips,
        locations.latitude,
        locations.longitude,
        vintage.svi_year,
        tracts.svi_score,
        tracts.svi_bucket,
        tracts.svi_bucket_order,
        tracts.svi_socioeconomic_score,
        tracts.svi_household_score,
        tracts.svi_minority_score,
        tracts.svi_housing_transport_score,
        coalesce(tracts.is_high_vulnerability, false) as is_high_vulnerability,
        case
            when locations.dbn is null then 'no_location'
            when locations.tract_geoid is null then 'no_tract'
            when tracts.tract_fips is null then 'tract_not_in_svi'
            when tracts.svi_score is null then 'svi_score_missing'
            else 'matched'
        end as svi_match_status
    from surveys
    left join locations
        on locations.dbn = surveys.dbn
        and locations.survey_year = surveys.survey_year
        and locations.closest_first = 1
    left join svi_vintage_for_survey as vintage
        on vintage.survey_year = surveys.survey_year
        and vintage.closest_first = 1
    left join {{ ref('int_tract_vulnerability') }} as tracts
        on tracts.tract_fips = locations.tract_geoid
        and tracts.svi_year = vintage.svi_year
)

select
    joined.dbn,
    joined.survey_year,
    joined.school_name,
    joined.district,
    joined.borough_code,
    joined.borough,
    joined.is_charter,
    joined.is_d75,
    joined.location_fiscal_year,
    joined.tract_fips,
    joined.latitude,
    joined.longitude,
    joined.svi_year,
    joined.svi_match_status,
    joined.svi_score,
    joined.svi_bucket,
    joined.svi_bucket_order,
    joined.svi_socioeconomic_score,
    joined.svi_household_score,
    joined.svi_minority_score,
    joined.svi_housing_transport_score,
    joined.is_high_vulnerability,
    joined.parent_response_rate,
    joined.teacher_response_rate,
    joined.student_response_rate,
    joined.collaborative_teachers_score,
    joined.effective_school_leadership_score,
    joined.rigorous_instruction_score,
    joined.supportive_environment_score,
    joined.strong_family_community_ties_score,
    joined.trust_score,
    joined.framework_scores_reported,
    joined.climate_score,
    case
        when joined.is_high_vulnerability
            and joined.parent_response_rate < thresholds.low_parent_response_rate
            then true
        else false
    end as flag_high_vulnerability_low_response,
    case
        when joined.is_high_vulnerability
            and joined.climate_score < thresholds.weak_climate_score
            then true
        else false
    end as flag_high_vulnerability_weak_climate
from joined
cross join thresholds

{{ config(materialized='table') }}
-- Schools with their location history (SCD2), one row per dbn and version, from the
-- school_location_snapshot. Key: school_version_key; (dbn, valid_from) is also unique.
-- Point-in-time joins use valid_from <= t < coalesce(valid_to, far future).

select
    dbt_scd_id as school_version_key,
    dbn,
    fiscal_year as location_fiscal_year,
    location_code,
    school_name,
    location_type,
    location_category,
    grades_text,
    status,
    address,
    borough_code,
    borough,
    county_fips,
    census_tract_2010,
    tract_geoid,
    latitude,
    longitude,
    geographical_district,
    nta,
    nta_name,
    svi_tract_matched,
    dbt_valid_from as valid_from,
    dbt_valid_to as valid_to,
    case when dbt_valid_to is null then true else false end as is_current
from {{ ref('school_location_snapshot') }}

{{ config(materialized='view') }}
-- The one reader of silver.school_location: every location vintage (fiscal year).

select
    dbn,
    cast(fiscal_year as {{ dbt.type_int() }}) as fiscal_year,
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
    cast(geographical_district as {{ dbt.type_int() }}) as geographical_district,
    nta,
    nta_name,
    svi_tract_matched
from {{ source('silver', 'school_location') }}

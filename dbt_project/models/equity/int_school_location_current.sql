{{ config(materialized='view') }}
-- The current location extract (the newest fiscal year in Silver), one row per dbn: what
-- the dim_school snapshot compares against on each run. A school missing from the newest
-- extract is closed out by the snapshot (hard_deletes: invalidate).

select *
from {{ ref('stg_school_location') }}
where fiscal_year = (select max(fiscal_year) from {{ ref('stg_school_location') }})

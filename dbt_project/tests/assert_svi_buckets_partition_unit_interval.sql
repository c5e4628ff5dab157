-- The bucket rule must give every percentile rank in [0, 1] exactly one bucket: ordered
-- buckets start at 0, each starts where the previous ends, and only the last is open.
-- Fails with one row per broken link.

with ordered as (
    select
        svi_bucket,
        bucket_order,
        lower_bound,
        upper_bound,
        lag(upper_bound) over (order by bucket_order) as previous_upper_bound,
        row_number() over (order by bucket_order) as position,
        count(*) over () as bucket_count
    from {{ ref('dim_svi_bucket') }}
)

select *
from ordered
where (position = 1 and lower_bound <> 0)
    or (position > 1 and (previous_upper_bound is null or lower_bound <> previous_upper_bound))
    or (position < bucket_count and (upper_bound is null or upper_bound <= lower_bound))
    or (position = bucket_count and upper_bound is not null)

{{ config(materialized='view') }}
-- Live survey response per school and respondent type (key: dbn, respondent_type), from
-- the stream's mart_live_response_daily, beside the response rate the DOE published for
-- the latest published survey year (2019) and the school's tract vulnerability.
-- A view: it must show the stream's latest batch as soon as the stream models are built,
-- without waiting for a rebuild of the equity tables.
-- Rows: every school x respondent type with a published rate (no live responses yet ->
-- live_submissions 0: the schools to chase), plus live rows without a published rate.
-- There is no enrollment in either source, so a live *rate* cannot be computed; the
-- percentiles compare a school's standing among its peers now and in the published year.

with latest_published as (
    select *
    from {{ ref('school_climate_snapshot') }}
    where survey_year = (select max(survey_year) from {{ ref('school_climate_snapshot') }})
),

published_by_type as (
    {% for respondent_type in ['parent', 'teacher', 'student'] -%}
    select
        dbn,
        survey_year as published_survey_year,
        '{{ respondent_type }}' as respondent_type,
        {{ respondent_type }}_response_rate as published_response_rate
    from latest_published
    where {{ respondent_type }}_response_rate is not null
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

published as (
    select
        *,
        percent_rank() over (partition by respondent_type order by published_response_rate)
            as published_response_rate_percentile
    from published_by_type
),

live as (
    select
        dbn,
        respondent_type,
        sum(submissions) as live_submissions,
        sum(respondents) as live_respondents,
        sum(answers) as live_answers,
        sum(avg_answer_score * answers) / nullif(sum(answers), 0) as live_avg_answer_score,
        count(*) as live_response_days,
        min(response_date) as first_response_date,
        max(response_date) as last_response_date,
        max(last_event_time) as last_event_time
    from {{ ref('mart_live_response_daily') }}
    group by dbn, respondent_type
),

school_year_keys as (
    select dbn, respondent_type from published
    union
    select dbn, respondent_type from live
),

schools as (
    select *
    from {{ ref('gold_school_equity') }}
    where survey_year = (select max(survey_year) from {{ ref('gold_school_equity') }})
),

combined as (
    select
        school_year_keys.dbn,
        school_year_keys.respondent_type,
        schools.school_name,
        schools.district,
        schools.borough,
        schools.svi_bucket,
        coalesce(schools.is_high_vulnerability, false) as is_high_vulnerability,
        coalesce(live.live_submissions, 0) as live_submissions,
        coalesce(live.live_respondents, 0) as live_respondents,
        coalesce(live.live_answers, 0) as live_answers,
        live.live_avg_answer_score,
        coalesce(live.live_response_days, 0) as live_response_days,
        live.first_response_date,
        live.last_response_date,
        live.last_event_time,
        published.published_survey_year,
        published.published_response_rate,
        published.published_response_rate_percentile
    from school_year_keys
    left join live
        on live.dbn = school_year_keys.dbn
        and live.respondent_type = school_year_keys.respondent_type
    left join published
        on published.dbn = school_year_keys.dbn
        and published.respondent_type = school_year_keys.respondent_type
    left join schools
        on schools.dbn = school_year_keys.dbn
),

ranked as (
    select
        *,
        percent_rank() over (partition by respondent_type order by live_submissions)
            as live_submissions_percentile
    from combined
)

select
    *,
    live_submissions_percentile - published_response_rate_percentile as tracking_gap
from ranked

{{ config(materialized='table') }}
-- Rebuilt whole on every stream run, on purpose. A late or corrected submission moves
-- rows between (dbn, respondent_type, day) keys and shifts the cumulative count of every
-- later day, so an incremental version would have to recompute each affected key's whole
-- history and also the keys a submission left; the full aggregate is one scan of the facts
-- (~1.8k schools x 3 respondent types x the survey window's days), well under a second.

with answer_totals as (
    select
        submission_id,
        count(*) as answers,
        sum(answer_value) as answer_value_sum
    from {{ ref('fct_survey_answer') }}
    group by submission_id
),

daily as (
    select
        r.dbn,
        r.respondent_type,
        r.response_date,
        count(*) as submissions,
        -- The event carries no respondent id: a submission is one respondent's answer
        -- sheet, so distinct submission ids are the distinct respondents. submission_id
        -- is the fact's key (tested unique), so a plain count counts them: DuckDB cannot
        -- spill a distinct aggregate, which ran out of memory below 256MB at 1M events.
        count(r.submission_id) as respondents,
        coalesce(sum(a.answers), 0) as answers,
        cast(sum(a.answer_value_sum) as {{ type_double() }})
            / nullif(sum(a.answers), 0) as avg_answer_score,
        max(r.event_time) as last_event_time
    from {{ ref('fct_survey_response') }} as r
    left join answer_totals as a
        on r.submission_id = a.submission_id
    group by r.dbn, r.respondent_type, r.response_date
)

select
    dbn,
    respondent_type,
    response_date,
    submissions,
    respondents,
    answers,
    avg_answer_score,
    cast(sum(submissions) over (
        partition by dbn, respondent_type
        order by response_date
        rows between unbounded preceding and current row
    ) as {{ dbt.type_bigint() }}) as cumulative_submissions,
    last_event_time
from daily

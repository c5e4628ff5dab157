{{ config(materialized='table') }}
-- The published NYC School Survey results per school and survey year (a "snapshot" of
-- climate as the DOE published it, as opposed to the live stream). Key: dbn, survey_year.
-- climate_score is the mean of the framework scores the school has (null when none).

{% set framework_scores = [
    'collaborative_teachers_score',
    'effective_school_leadership_score',
    'rigorous_instruction_score',
    'supportive_environment_score',
    'strong_family_community_ties_score',
    'trust_score',
] %}

with results as (
    select * from {{ ref('stg_school_survey_results') }}
),

scored as (
    select
        results.*,
        (
            {% for col in framework_scores -%}
            case when {{ col }} is not null then 1 else 0 end{{ ' +' if not loop.last }}
            {% endfor -%}
        ) as framework_scores_reported,
        (
            {% for col in framework_scores -%}
            coalesce({{ col }}, 0){{ ' +' if not loop.last }}
            {% endfor -%}
        ) as framework_score_sum
    from results
)

select
    dbn,
    survey_year,
    school_name,
    district,
    borough_code,
    borough,
    is_charter,
    is_d75,
    parent_response_rate,
    teacher_response_rate,
    student_response_rate,
    {% for col in framework_scores -%}
    {{ col }},
    {% endfor -%}
    framework_scores_reported,
    case
        when framework_scores_reported > 0
            then framework_score_sum / framework_scores_reported
    end as climate_score
from scored

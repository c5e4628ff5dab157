{#- Fails with one row per value outside [min_value, max_value] (inclusive). Nulls pass:
    nullability is not_null's job, so a column can be optional and still bounded. -#}
{% test value_in_range(model, column_name, min_value=none, max_value=none) %}
  {%- if min_value is none and max_value is none -%}
    {{ exceptions.raise_compiler_error("value_in_range on " ~ column_name ~ ": give min_value, max_value or both") }}
  {%- endif %}
  select {{ column_name }} as out_of_range_value
  from {{ model }}
  where {{ column_name }} is not null
    and (
      {%- if min_value is not none %} {{ column_name }} < {{ min_value }}{% endif %}
      {%- if min_value is not none and max_value is not none %} or{% endif %}
      {%- if max_value is not none %} {{ column_name }} > {{ max_value }}{% endif %}
    )
{% endtest %}

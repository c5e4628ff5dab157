{#- Generic tests the project needs without a package download (runs offline). -#}

{% test unique_combination_of_columns(model, combination_of_columns) %}
  {#- Fails with one row per duplicated key. -#}
  {%- set cols = combination_of_columns | join(', ') -%}
  select {{ cols }}, count(*) as n_rows
  from {{ model }}
  group by {{ cols }}
  having count(*) > 1
{% endtest %}

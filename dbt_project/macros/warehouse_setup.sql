{#- Run-start hooks (dbt_project.yml: on-run-start). -#}

{% macro create_run_schemas() %}
  {#- dbt's threads create schemas lazily and, on DuckDB, two threads creating the same
      schema at once fail with a write-write conflict; creating them once, before any
      model runs, removes the race. On DuckDB the delta plugin also copies sources into
      their own schema (`silver`). On Snowflake the Silver schema is external: not ours. -#}
  {% if execute %}
    {% do run_query("create schema if not exists " ~ target.schema) %}
    {% if target.type == 'duckdb' %}
      {% set seen = [] %}
      {% for src in graph.sources.values() if _delta_plugin_source(src) and src.schema not in seen %}
        {% do seen.append(src.schema) %}
        {% do run_query("create schema if not exists " ~ src.schema) %}
      {% endfor %}
    {% endif %}
  {% endif %}

{% endmacro %}


{% macro _delta_plugin_source(src) %}
  {%- set meta = (src.config.get('meta') or {}) if src.config else {} -%}
  {{- return((meta.get('plugin') or (src.meta or {}).get('plugin')) == 'delta') -}}
{% endmacro %}


{% macro load_unselected_delta_sources() %}
  {#- dbt-duckdb's delta plugin copies a source from the lake only when a node calling
      source() is compiled. When a run selects a model below the stg_ views but not the
      view itself (a Dagster subset, `dbt build -s fct_survey_response`), the view would
      read the copy made by an earlier run: stale Gold with no error. So, before the run,
      copy each delta source that a selected node reads through unselected views, unless a
      selected node reads it directly (its compile copies it anyway; twice is a full read
      for nothing). Tables between a source and a selected node are not followed: what
      they hold is their own state, and this run does not rebuild them. -#}
  {% if execute and target.type == 'duckdb' %}
    {% set selected = selected_resources or [] %}
    {% for src in graph.sources.values() if _delta_plugin_source(src) %}
      {% set direct = [] %}
      {% for uid in selected if src.unique_id in graph.nodes.get(uid, {}).get('depends_on', {}).get('nodes', []) %}
        {% do direct.append(uid) %}
      {% endfor %}
      {% if not direct and _read_through_views(src.unique_id, selected) %}
        {{ log("Copying source " ~ src.source_name ~ "." ~ src.name ~ " from the lake: selected nodes read it through unselected views", info=True) }}
        {% do source(src.source_name, src.name) %}
      {% endif %}
    {% endfor %}
  {% endif %}
{% endmacro %}


{% macro _read_through_views(source_id, selected) %}
  {#- Walks down from the source through views and ephemerals (read live by whoever
      selects from them) and answers whether a selected node is reached. Fixed-point
      passes; the project is shallow and the loop stops when a pass adds nothing. -#}
  {% set live = [source_id] %}
  {% for _ in range(50) %}
    {% set added = [] %}
    {% for node in graph.nodes.values() if node.unique_id not in live %}
      {% set reads_live = [] %}
      {% for parent in node.depends_on.nodes if parent in live %}{% do reads_live.append(parent) %}{% endfor %}
      {% if reads_live %}
        {% if node.unique_id in selected %}
          {{ return(true) }}
        {% elif node.config.materialized in ('view', 'ephemeral') %}
          {% do live.append(node.unique_id) %}
          {% do added.append(node.unique_id) %}
        {% endif %}
      {% endif %}
    {% endfor %}
    {% if not added %}{% break %}{% endif %}
  {% endfor %}
  {{ return(false) }}
{% endmacro %}

"""Table contracts: one Pandera (polars) model per table, the single source of truth
for column names, types, nullability, keys and value ranges. Asset checks, the
``dagster/column_schema`` metadata and the validation before a write are all
generated from them (see ``checks``)."""

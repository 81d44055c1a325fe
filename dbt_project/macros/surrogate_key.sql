{#
  surrogate_key(expressions): md5 of the expressions' text, '|'-separated, nulls as '_null_'.
  Written with `||` and cast(... as text) only, so the key is identical on DuckDB, PostgreSQL and
  Redshift as long as each expression renders to the same text on all of them: cast timestamps
  as they are, money as numeric(p,s), never double precision (DuckDB writes 12.0, PostgreSQL 12).
#}
{% macro surrogate_key(expressions) -%}
    md5(
    {%- for expression in expressions %}
        coalesce(cast({{ expression }} as {{ dbt.type_string() }}), '_null_'){{ " || '|' ||" if not loop.last }}
    {%- endfor %}
    )
{%- endmacro %}

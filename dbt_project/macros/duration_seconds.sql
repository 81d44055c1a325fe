{# duration_seconds(start, end): seconds from start to end (timestamps), as double precision. #}
{% macro duration_seconds(start_at, end_at) -%}
    {{ return(adapter.dispatch('duration_seconds')(start_at, end_at)) }}
{%- endmacro %}

{% macro default__duration_seconds(start_at, end_at) -%}
    cast(extract(epoch from ({{ end_at }} - {{ start_at }})) as double precision)
{%- endmacro %}

{% macro redshift__duration_seconds(start_at, end_at) -%}
    cast(datediff(second, {{ start_at }}, {{ end_at }}) as double precision)
{%- endmacro %}

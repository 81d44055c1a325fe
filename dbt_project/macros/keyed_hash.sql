{#
  keyed_hash(column): a keyed SHA-256 of a personal identifier, as 64 lowercase hex digits.

  The key comes from PLATFORM_PII_KEY (a secret; in AWS from Secrets Manager). The default key is
  for local development only. Without the key, a hash of a small identifier space (e.g. E + 6
  digits) could be reversed by brute force; with it, the hash is a stable pseudonym that joins
  across tables and engines. The same input and key give the same value on every engine.
#}
{% macro keyed_hash(column) -%}
    {{ return(adapter.dispatch('keyed_hash')(column)) }}
{%- endmacro %}

{% macro pii_key_literal() -%}
    '{{ env_var("PLATFORM_PII_KEY", "local-development-key") | replace("'", "''") }}'
{%- endmacro %}

{# PostgreSQL (and anything PostgreSQL-like): sha256() takes bytea. #}
{% macro default__keyed_hash(column) -%}
    encode(sha256(convert_to({{ pii_key_literal() }} || '|' || cast({{ column }} as text), 'UTF8')), 'hex')
{%- endmacro %}

{% macro duckdb__keyed_hash(column) -%}
    sha256({{ pii_key_literal() }} || '|' || cast({{ column }} as varchar))
{%- endmacro %}

{% macro redshift__keyed_hash(column) -%}
    sha2({{ pii_key_literal() }} || '|' || cast({{ column }} as varchar), 256)
{%- endmacro %}

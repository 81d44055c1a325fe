{#
  keyed_hash(column): a keyed SHA-256 of a personal identifier, as 64 lowercase hex digits:
  sha256(key || '|' || value).

  The key (PLATFORM_PII_KEY; in AWS from Secrets Manager) is never rendered into SQL: the
  connection sets it as a session value and the SQL reads it there (see resources/pii.py), so it is
  in no compiled model, dbt artifact, log or view definition. Without the key, a hash of a small
  identifier space (e.g. E + 6 digits) could be reversed by brute force; with it, the hash is a
  stable pseudonym that joins across tables and engines. Same input and key, same value everywhere.
  A missing key is an error, never a null or unkeyed hash.
#}
{% macro keyed_hash(column) -%}
    {{ return(adapter.dispatch('keyed_hash')(column)) }}
{%- endmacro %}

{# PostgreSQL: PGOPTIONS='-c platform.pii_key=...'; current_setting() fails when it is not set. #}
{% macro default__keyed_hash(column) -%}
    encode(sha256(convert_to(current_setting('platform.pii_key') || '|' || cast({{ column }} as text), 'UTF8')), 'hex')
{%- endmacro %}

{# DuckDB: the variable set by the dbt-duckdb plugin resources.duckdb_session. #}
{% macro duckdb__keyed_hash(column) -%}
    sha256(coalesce(getvariable('platform_pii_key'), error('the PII hashing key is not set on this connection: the dbt profile needs the plugin resources.duckdb_session')) || '|' || cast({{ column }} as varchar))
{%- endmacro %}

{#
  Redshift has no session variables: the key is a one-row table readable only by the platform's
  dbt user (var pii_key_relation), provisioned from Secrets Manager before each dbt run
  (RedshiftWarehouse.provision_pii_key). This macro itself runs on Redshift only: untested here.
#}
{% macro redshift__keyed_hash(column) -%}
    sha2((select pii_key from {{ var('pii_key_relation', 'platform_secrets.pii_key') }}) || '|' || cast({{ column }} as varchar), 256)
{%- endmacro %}

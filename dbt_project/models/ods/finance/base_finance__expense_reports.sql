{# A table, not a view: the hash needs the key that only the platform's dbt connections carry. #}
{{ config(materialized='table') }}

{#
  employee_id and employee_email are personal data and must not reach the ods zone, where this
  view lives: employee_id is replaced here by its keyed hash and employee_email is dropped.
#}

with source as (

    select * from {{ source('staging_finance', 'expense_reports') }}

),

renamed as (

    select
        report_id,
        line_number,
        {{ keyed_hash('employee_id') }} as employee_key,
        cost_centre,
        category,
        amount,
        currency,
        expense_date,
        submitted_at,
        _source_file as source_file,
        _source_line as source_line

    from source

)

select * from renamed

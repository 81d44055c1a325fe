with expense_reports as (

    select * from {{ ref('base_finance__expense_reports') }}

),

{# A line exported again in a later file (a corrected or re-sent report): keep the latest
   submission, then the latest file and line, so the choice is stable. #}
ranked as (

    select
        expense_reports.*,
        row_number() over (
            partition by report_id, line_number
            order by submitted_at desc, source_file desc, source_line desc
        ) as recency

    from expense_reports

),

final as (

    select
        report_id || '-' || cast(line_number as {{ dbt.type_string() }}) as expense_line_id,
        report_id,
        line_number,
        employee_key,
        cost_centre,
        category,
        amount,
        currency,
        expense_date,
        cast({{ dbt.date_trunc('month', 'cast(expense_date as timestamp)') }} as date) as expense_month,
        submitted_at,
        source_file,
        source_line

    from ranked
    where recency = 1

)

select * from final

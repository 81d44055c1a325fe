{#
  Policy limits per category come from the project variable expense_policy_limits (amounts in
  the expense's own currency). An anomalous line is more than 3 standard deviations above the
  mean amount of its category in its currency, over all the lines modelled so far.
-#}
{%- set policy_limits = var('expense_policy_limits') -%}

with expense_lines as (

    select * from {{ ref('expense_lines') }}

),

flagged as (

    select
        expense_month,
        cost_centre,
        category,
        currency,
        report_id,
        amount,
        case category
            {%- for category, limit in policy_limits.items() %}
            when '{{ category }}' then cast({{ limit }} as numeric(12,2))
            {%- endfor %}
        end as policy_limit,
        cast(amount as double precision) as amount_value,
        avg(cast(amount as double precision)) over (partition by category, currency) as category_mean,
        stddev_samp(cast(amount as double precision)) over (partition by category, currency) as category_stddev

    from expense_lines

),

final as (

    select
        expense_month,
        cost_centre,
        category,
        currency,
        max(policy_limit) as policy_limit,
        cast(count(*) as bigint) as lines,
        cast(count(distinct report_id) as bigint) as reports,
        cast(sum(amount) as numeric(14,2)) as total_amount,
        cast(sum(case when amount > policy_limit then 1 else 0 end) as bigint) as out_of_policy_lines,
        cast(sum(
            case when amount_value > category_mean + 3 * category_stddev then 1 else 0 end
        ) as bigint) as anomalous_lines

    from flagged
    group by expense_month, cost_centre, category, currency

)

select * from final

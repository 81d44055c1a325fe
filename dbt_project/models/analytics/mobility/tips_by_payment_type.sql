{#- TLC data dictionary. A trip without a payment type is counted as 5 (unknown). -#}
{%- set payment_type_names = {
    1: 'Credit card',
    2: 'Cash',
    3: 'No charge',
    4: 'Dispute',
    5: 'Unknown',
    6: 'Voided trip',
} -%}

with trips as (

    select
        cast(coalesce(payment_type, 5) as smallint) as payment_type,
        tip_amount,
        fare_amount

    from {{ ref('trips') }}

),

by_payment_type as (

    select
        payment_type,
        cast(count(*) as bigint) as trips,
        cast(sum(case when tip_amount > 0 then 1 else 0 end) as bigint) as trips_with_tip,
        cast(avg(
            case
                when fare_amount > 0 and tip_amount is not null
                    then cast(tip_amount as double precision) / cast(fare_amount as double precision) * 100
            end
        ) as double precision) as avg_tip_percentage

    from trips
    group by payment_type

),

final as (

    select
        payment_type,
        cast(
            case payment_type
                {%- for code, name in payment_type_names.items() %}
                when {{ code }} then '{{ name }}'
                {%- endfor %}
            end as {{ dbt.type_string() }}
        ) as payment_type_name,
        trips,
        trips_with_tip,
        cast(trips_with_tip as double precision) / trips as share_of_trips_with_tip,
        avg_tip_percentage

    from by_payment_type

)

select * from final

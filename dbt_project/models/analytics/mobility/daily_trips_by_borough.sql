with trips as (

    select * from {{ ref('trips') }}

),

final as (

    select
        pickup_date as trip_date,
        pickup_borough,
        cast(count(*) as bigint) as trips,
        cast(coalesce(sum(passenger_count), 0) as bigint) as passengers,
        cast(sum(trip_distance_miles) as double precision) as total_distance_miles,
        cast(sum(fare_amount) as numeric(14,2)) as fare_revenue,
        cast(sum(tip_amount) as numeric(14,2)) as tip_revenue,
        cast(sum(total_amount) as numeric(14,2)) as total_revenue,
        cast(avg(duration_minutes) as double precision) as avg_duration_minutes

    from trips
    group by pickup_date, pickup_borough

)

select * from final

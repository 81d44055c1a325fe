with trips as (

    select * from {{ ref('trips') }}

),

zones as (

    select * from {{ ref('zones') }}

),

flows as (

    select
        pickup_location_id,
        dropoff_location_id,
        cast(count(*) as bigint) as trips,
        cast(avg(cast(fare_amount as double precision)) as double precision) as avg_fare_amount,
        cast(avg(duration_minutes) as double precision) as avg_duration_minutes

    from trips
    group by pickup_location_id, dropoff_location_id

),

final as (

    select
        flows.pickup_location_id,
        flows.dropoff_location_id,
        pickup_zone.borough as pickup_borough,
        pickup_zone.zone as pickup_zone,
        dropoff_zone.borough as dropoff_borough,
        dropoff_zone.zone as dropoff_zone,
        flows.trips,
        flows.avg_fare_amount,
        flows.avg_duration_minutes

    from flows
    left join zones as pickup_zone
        on flows.pickup_location_id = pickup_zone.location_id
    left join zones as dropoff_zone
        on flows.dropoff_location_id = dropoff_zone.location_id

)

select * from final

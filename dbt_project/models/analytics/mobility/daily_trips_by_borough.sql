{#- Incremental by trip date: a build recomputes the dates whose trips were modelled after this
    table's last build (trips.modelled_at), and drops the dates no trip is on any more. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='trip_date',
    on_schema_change='fail',
    post_hook="delete from {{ this }} where trip_date not in (select distinct pickup_date from {{ ref('trips') }})",
) }}

with trips as (

    select * from {{ ref('trips') }}
    {% if is_incremental() %}
    where pickup_date in (
        select distinct pickup_date from {{ ref('trips') }}
        where modelled_at > (select coalesce(max(modelled_at), cast('1900-01-01' as timestamp)) from {{ this }})
    )
    {% endif %}

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
        cast(avg(duration_minutes) as double precision) as avg_duration_minutes,
        max(modelled_at) as modelled_at

    from trips
    group by pickup_date, pickup_borough

)

select * from final

{{ config(materialized='view') }}

with source as (

    select * from {{ source('staging_mobility', 'yellow_trips') }}

),

renamed as (

    select
        vendor_id,
        pickup_at,
        dropoff_at,
        passenger_count,
        trip_distance as trip_distance_miles,
        ratecode_id as rate_code_id,
        store_and_fwd_flag,
        pickup_location_id,
        dropoff_location_id,
        payment_type,
        fare_amount,
        extra as extra_amount,
        mta_tax as mta_tax_amount,
        tip_amount,
        tolls_amount,
        improvement_surcharge as improvement_surcharge_amount,
        total_amount,
        congestion_surcharge as congestion_surcharge_amount,
        airport_fee as airport_fee_amount,
        _source_file as source_file,
        _source_line as source_line,
        _partition_key as source_partition

    from source

)

select * from renamed

{{ config(materialized='view') }}

with source as (

    select * from {{ source('staging_mobility', 'taxi_zones') }}

),

renamed as (

    select
        location_id,
        borough,
        zone,
        service_zone,
        _source_file as source_file,
        _source_line as source_line

    from source

)

select * from renamed

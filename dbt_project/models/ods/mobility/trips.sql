{#- Incremental by pickup date. A build recomputes exactly the pickup dates a change touched:
    the dates of the deliveries published since the last build, those of the deliveries that left
    staging since then (superseded by a re-delivery), and every date when the zone lookup was
    rebuilt after this table. A trip's occurrences share its pickup time, so de-duplicating within
    those dates is de-duplicating across the lake; the result is the full refresh's, row for row.
    A date whose every delivery left staging has nothing to insert: the post-hook removes it. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='pickup_date',
    on_schema_change='fail',
    post_hook="delete from {{ this }} where source_partition not in (select distinct source_partition from {{ ref('base_mobility__yellow_trips') }})",
) }}

{%- set natural_key = [
    'vendor_id',
    'pickup_at',
    'dropoff_at',
    'pickup_location_id',
    'dropoff_location_id',
    'cast(fare_amount as numeric(12,2))',
    'cast(total_amount as numeric(12,2))',
] -%}

{%- set money_columns = [
    'fare_amount',
    'extra_amount',
    'mta_tax_amount',
    'tip_amount',
    'tolls_amount',
    'improvement_surcharge_amount',
    'total_amount',
    'congestion_surcharge_amount',
    'airport_fee_amount',
] -%}

with yellow_trips as (

    select * from {{ ref('base_mobility__yellow_trips') }}

),

zones as (

    select * from {{ ref('zones') }}

),

{% if is_incremental() %}

built as (

    select distinct source_partition from {{ this }}

),

published as (

    select distinct source_partition from yellow_trips

),

changed_dates as (

    select distinct cast(pickup_at as date) as pickup_date
    from yellow_trips
    where source_partition not in (select source_partition from built)

    union

    select distinct pickup_date
    from {{ this }}
    where source_partition not in (select source_partition from published)
        or (select max(modelled_at) from zones) > (select max(modelled_at) from {{ this }})

),

scoped as (

    select * from yellow_trips
    where cast(pickup_at as date) in (select pickup_date from changed_dates)

),

{% else %}

scoped as (

    select * from yellow_trips

),

{% endif %}

keyed as (

    select
        {{ surrogate_key(natural_key) }} as trip_id,
        scoped.*

    from scoped

),

{# The same trip delivered more than once (a re-sent file, overlapping extracts): keep the first
   occurrence by file name and line, so the choice is stable from one build to the next. #}
deduplicated as (

    select *
    from (
        select
            keyed.*,
            row_number() over (
                partition by trip_id
                order by source_file, source_line, source_partition
            ) as occurrence
        from keyed
    ) as ranked
    where occurrence = 1

),

final as (

    select
        deduplicated.trip_id,
        deduplicated.vendor_id,
        deduplicated.pickup_at,
        deduplicated.dropoff_at,
        cast(deduplicated.pickup_at as date) as pickup_date,
        {{ duration_seconds('deduplicated.pickup_at', 'deduplicated.dropoff_at') }} / 60.0 as duration_minutes,
        deduplicated.passenger_count,
        deduplicated.trip_distance_miles,
        deduplicated.rate_code_id,
        case deduplicated.store_and_fwd_flag
            when 'Y' then true
            when 'N' then false
        end as is_store_and_forward,
        deduplicated.pickup_location_id,
        pickup_zone.borough as pickup_borough,
        pickup_zone.zone as pickup_zone,
        pickup_zone.service_zone as pickup_service_zone,
        deduplicated.dropoff_location_id,
        dropoff_zone.borough as dropoff_borough,
        dropoff_zone.zone as dropoff_zone,
        dropoff_zone.service_zone as dropoff_service_zone,
        deduplicated.payment_type,
        {%- for column in money_columns %}
        cast(deduplicated.{{ column }} as numeric(12,2)) as {{ column }},
        {%- endfor %}
        deduplicated.source_file,
        deduplicated.source_line,
        deduplicated.source_partition,
        cast({{ dbt.current_timestamp() }} as timestamp) as modelled_at

    from deduplicated
    left join zones as pickup_zone
        on deduplicated.pickup_location_id = pickup_zone.location_id
    left join zones as dropoff_zone
        on deduplicated.dropoff_location_id = dropoff_zone.location_id

)

select * from final

with taxi_zones as (

    select * from {{ ref('base_mobility__taxi_zones') }}

),

{#
  Staging keeps every delivery of the lookup file and carries no delivery time, so when a zone
  was delivered more than once the row of the greatest file name (then line) is kept.
#}
ranked as (

    select
        taxi_zones.*,
        row_number() over (
            partition by location_id
            order by source_file desc, source_line desc
        ) as delivery_rank

    from taxi_zones

),

final as (

    select
        location_id,
        borough,
        zone,
        service_zone,
        source_file,
        source_line

    from ranked
    where delivery_rank = 1

)

select * from final

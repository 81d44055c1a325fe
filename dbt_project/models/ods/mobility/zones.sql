{#- Incremental: a build rewrites only the zones whose row changed (so modelled_at says when a
    zone last changed, and trips re-enriches only after a lookup that changed something), and
    removes the zones no delivery has any more. -#}
{%- set compared = ['borough', 'zone', 'service_zone', 'source_file', 'source_line'] -%}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='location_id',
    on_schema_change='fail',
    post_hook="delete from {{ this }} where location_id not in (select location_id from {{ ref('base_mobility__taxi_zones') }})",
) }}

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

latest as (

    select
        location_id,
        borough,
        zone,
        service_zone,
        source_file,
        source_line

    from ranked
    where delivery_rank = 1

),

final as (

    select
        latest.*,
        cast({{ dbt.current_timestamp() }} as timestamp) as modelled_at

    from latest
    {% if is_incremental() %}
    where not exists (
        select 1 from {{ this }} as built
        where built.location_id = latest.location_id
        {%- for column in compared %}
            and (built.{{ column }} = latest.{{ column }} or (built.{{ column }} is null and latest.{{ column }} is null))
        {%- endfor %}
    )
    {% endif %}

)

select * from final

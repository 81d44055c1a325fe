{#
  unique_combination: no two rows share the same values of `columns` (a composite key).
  Usage (model level):
    data_tests:
      - unique_combination:
          arguments:
            columns: [trip_date, pickup_borough]
#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}

{#
  totals_match: an aggregate over the model equals an aggregate over another relation, e.g. a
  mart's sum(trips) equals count(*) of the canonical table it was built from. `tolerance` allows
  for floating-point sums.
    data_tests:
      - totals_match:
          arguments:
            expression: sum(trips)
            compare_model: ref('trips')
            compare_expression: count(*)
#}
{% test totals_match(model, expression, compare_model, compare_expression, tolerance=0) %}

with model_total as (
    select cast({{ expression }} as {{ dbt.type_numeric() }}) as total from {{ model }}
),

compare_total as (
    select cast({{ compare_expression }} as {{ dbt.type_numeric() }}) as total from {{ compare_model }}
)

select
    model_total.total as model_total,
    compare_total.total as compare_total
from model_total
cross join compare_total
where abs(coalesce(model_total.total, 0) - coalesce(compare_total.total, 0)) > {{ tolerance }}
   or (model_total.total is null) <> (compare_total.total is null)

{% endtest %}

{#
  expression_is_true: every row satisfies a boolean SQL expression. At column level the
  expression is applied to the column (`expression: ">= 0"`); at model level it is a whole
  predicate (`expression: "dropoff_at >= pickup_at"`). Rows where it is false or null fail.
#}
{% test expression_is_true(model, expression, column_name=none) %}

select *
from {{ model }}
where not coalesce(({{ column_name ~ ' ' if column_name }}{{ expression }}), false)

{% endtest %}

{#- Fails for every row where the boolean expression is false (arithmetic rules of a model).
    Works on both engines: the expression is plain SQL over the model's columns. -#}
{% test expression_is_true(model, expression, column_name=none, where_clause=none) %}
select *
from {{ model }}
where not ({{ expression }})
{%- if where_clause %} and ({{ where_clause }}){% endif %}
{% endtest %}

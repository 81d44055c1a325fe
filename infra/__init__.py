"""Infrastructure generated from the declarations: the CloudFormation template of an AWS environment
(``cloudformation``), a small IAM policy evaluator to review it (``policy``), the access expectations it
must meet (``check``) and a promotion review of two environments (``diff``)."""

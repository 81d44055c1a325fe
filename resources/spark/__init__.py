"""Where the Spark staging job runs, through Dagster Pipes: a local subprocess in the Spark
environment (``local``), EMR Serverless or Glue (``aws``). ``PlatformResource.spark_jobs`` picks
one from the environment's ``spark:`` section; the engine only sees ``engine.spark.SparkJobs``."""

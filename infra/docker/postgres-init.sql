-- One Postgres, two databases: MLflow's (POSTGRES_DB, created by the image) and Prefect's.
CREATE DATABASE prefect;

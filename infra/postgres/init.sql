-- One Postgres, one database per server.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;

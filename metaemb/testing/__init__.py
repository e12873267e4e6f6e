"""Real servers on loopback ports for the tests and benchmarks (started and stopped by them):
moto's S3 server (s3_server), redis-server (redis_server), and the helpers they share (loopback)."""

import os

# Four simulated CPU devices for the data-parallel tests; the rest of the suite uses device 0 only.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

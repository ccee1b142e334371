"""Getting envelopes out of IRIS: building them, publishing them to RabbitMQ, spooling them while it is away."""

"""Stage 1, the spec: YAML read with positions, validated in one pass, every problem located.

document.py turns the file into data with line/column marks; loader.py runs the checks
(fields, references, reporters, librdkafka's own verdict on Kafka properties).
"""

"""Avro in the Confluent wire format, with encoders and decoders compiled per schema.

What users need is here; the modules behind it each have one job:

- ``serde``: ``AvroSerializer`` / ``AvroDeserializer`` (registry, framing, strict
  ``CodecError`` reason codes) and ``frame`` / ``unframe``;
- ``encoder``: ``compile_encoder``, a schema's encoder (datum -> Avro body);
- ``decoder``: ``compile_decoder``, a schema's decoder (Avro body -> datum);
- ``resolution``: fastavro's schema-resolution rules, for the decoder;
- ``compiler``: the generated-source machinery the encoder and decoder share.
"""

from schemas.codec.compiler import UnsupportedSchemaError
from schemas.codec.decoder import AvroDecoder, compile_decoder
from schemas.codec.encoder import AvroEncoder, compile_encoder
from schemas.codec.serde import MAGIC_BYTE, AvroDeserializer, AvroSerializer, frame, unframe

__all__ = [
    "MAGIC_BYTE",
    "AvroDecoder",
    "AvroDeserializer",
    "AvroEncoder",
    "AvroSerializer",
    "UnsupportedSchemaError",
    "compile_decoder",
    "compile_encoder",
    "frame",
    "unframe",
]

"""The Python SDK of esaas: Elasticsearch clusters as a service.

``esaas.v1`` is generated from the API's protos (``cluster_pb2``, ``operation_pb2``,
``admin_pb2``, ``catalog_pb2`` and their ``*_pb2_grpc`` stubs); ``Client`` adds what every
caller would otherwise write by hand.
"""

from esaas import v1
from esaas.client import Client, EsaasError, OperationFailed, RetryPolicy, WatchItem

__all__ = ["Client", "EsaasError", "OperationFailed", "RetryPolicy", "WatchItem", "v1"]

"""Per-route policy from Envoy route metadata, as forwarded in ext_proc request attributes.

A route carries `metadata: {filter_metadata: {llm_router: {policy: NAME}}}` (or inline policy
fields). Envoy sends the matched route's metadata as the `xds.route_metadata` attribute in
protobuf text format; it is parsed once per distinct text and cached.
"""
from __future__ import annotations

from typing import Any

from envoy.config.core.v3.base_pb2 import Metadata
from google.protobuf import json_format, text_format

FILTER_ATTRS = "envoy.filters.http.ext_proc"
ROUTE_ATTR = "xds.route_metadata"
MAX_CACHED = 1024


class RouteConfCache:
    """Route metadata text -> the route's llm_router config (a dict, or None), parsed once."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._cache: dict[str, Any] = {}

    def get(self, attributes) -> Any:
        """The route config in an ext_proc ProcessingRequest.attributes map, or None."""
        attrs = attributes.get(FILTER_ATTRS)
        if attrs is None:
            return None
        value = attrs.fields.get(ROUTE_ATTR)
        if value is None:
            return None
        if value.HasField("struct_value"):
            return self._from_struct(value.struct_value)
        text = value.string_value
        if not text:
            return None
        found = self._cache.get(text, self)
        if found is self:
            found = self.parse(text)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[text] = found
        return found

    def parse(self, text: str) -> Any:
        """Route config from metadata in protobuf text format; a bad text becomes an invalid config."""
        md = Metadata()
        try:
            text_format.Parse(text, md)
        except text_format.ParseError as exc:
            return {"policy": f"<unreadable route metadata: {exc}>"}
        if self.namespace not in md.filter_metadata:
            return None
        return self._from_struct(md.filter_metadata[self.namespace])

    @staticmethod
    def _from_struct(struct) -> Any:
        data = json_format.MessageToDict(struct)
        return data or None

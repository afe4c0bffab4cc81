"""Flatbuffers code generated from ../ext_plugin.fbs (regenerate: python -m llm_router.gateways.apisix.gen_proto)."""

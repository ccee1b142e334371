def get_server_settings_as_dict() -> dict:
    """IRIS's server settings (proxies and the like); the module does not read them."""
    return {"http_proxy": "", "https_proxy": "", "prevent_post_mod_repush": False}

"""inference service settings: environment variables prefixed ``INFERENCE_``."""

from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_", extra="ignore")

    service_name: str = "inference"
    port: int = 8002

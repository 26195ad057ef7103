"""knowledge service settings: environment variables prefixed ``KNOWLEDGE_``."""

from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KNOWLEDGE_", extra="ignore")

    service_name: str = "knowledge"
    port: int = 8003

"""auth service settings: environment variables prefixed ``AUTH_``."""

from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    service_name: str = "auth"
    port: int = 8001

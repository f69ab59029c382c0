// The Android twin of the Edge SDK runtime: `core` (plain Java, no Android: manifest, integrity,
// statistics, report JSON; also built and tested by `make test-jvm` without Gradle) and `app`
// (Kotlin, ExecuTorch + ONNX Runtime Android). Needs Google's Maven and Maven Central.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "edgesdk-android-demo"
include(":core", ":app")

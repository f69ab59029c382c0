import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val executorchVersion: String by project
val onnxruntimeVersion: String by project
val onnxruntimeQnnVersion: String by project
val withQnn = (findProperty("withQnn") as String?).toBoolean()

android {
    namespace = "dev.edgesdk.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.edgesdk.demo"   // runtime.devices.APP_PACKAGE
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")   // phones, and the emulator
        }
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION",
            "\"${if (withQnn) onnxruntimeQnnVersion else onnxruntimeVersion}\"")
        buildConfigField("boolean", "WITH_QNN", withQnn.toString())
    }

    buildFeatures {
        buildConfig = true
    }

    buildTypes {
        release {
            // A measuring tool, not a store app: no shrinking (the inference libraries reach their
            // Java classes from JNI), signed with the debug key so `installRelease` works anywhere.
            isMinifyEnabled = false
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        jniLibs {
            // QNN's HTP libraries are opened by path from nativeLibraryDir: keep them extracted
            useLegacyPackaging = true
        }
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    implementation(project(":core"))
    implementation("org.pytorch:executorch-android:$executorchVersion")
    if (withQnn) {
        implementation("com.microsoft.onnxruntime:onnxruntime-android-qnn:$onnxruntimeQnnVersion")
    } else {
        implementation("com.microsoft.onnxruntime:onnxruntime-android:$onnxruntimeVersion")
    }
}
